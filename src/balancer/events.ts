// Endpoint state events of a gateway: an endpoint ejected by outlier detection or back in
// rotation, found unreachable or reachable again, a destination's circuit limit refusing a
// request. One emitter per gateway (the service table's), outliving config versions, so
// metrics, logs and the admin API subscribe once. Listeners run synchronously, where the
// change happens: keep them to a counter or a short list.
import type { OutlierEvent } from './outlier.js'
import type { OverflowLimit } from './circuit.js'

/** A circuit limit of `service` refused a request or a retry. */
export interface OverflowEvent {
  readonly type: 'overflow'
  readonly service: string
  readonly limit: OverflowLimit
}

export type EndpointEvent = OutlierEvent | OverflowEvent

export type EndpointEventListener = (event: EndpointEvent) => void

export class EndpointEvents {
  private listeners: readonly EndpointEventListener[] = []
  /** Told of a listener that threw (it must not stop the change that emitted the event). */
  onListenerError: (err: unknown, event: EndpointEvent) => void = () => {}

  /** Adds a listener; returns its removal. */
  on (listener: EndpointEventListener): () => void {
    this.listeners = [...this.listeners, listener]
    return () => { this.listeners = this.listeners.filter((l) => l !== listener) }
  }

  emit (event: EndpointEvent): void {
    const listeners = this.listeners
    for (let i = 0; i < listeners.length; i++) {
      try {
        listeners[i]!(event)
      } catch (err) {
        this.onListenerError(err, event)
      }
    }
  }
}
