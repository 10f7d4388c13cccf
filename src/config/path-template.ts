// Path templates (`/users/:id/*`) compiled once into anchored regular expressions.

export interface CompiledTemplate {
  readonly regex: RegExp
  readonly params: string[]
  /** Literal characters: more literal text means a more specific template. */
  readonly literalLength: number
}

const PARAM = /^:([a-zA-Z_$][\w$]*)$/

/** Throws an Error naming the bad segment; config validation turns it into a problem. */
export function compileTemplate (template: string): CompiledTemplate {
  if (!template.startsWith('/')) throw new Error(`template "${template}" must start with /`)
  const segments = template.slice(1).split('/')
  const params: string[] = []
  let source = '^'
  let literalLength = 0
  segments.forEach((segment, i) => {
    if (segment === '' && i !== segments.length - 1) throw new Error(`"${template}" has an empty segment ("//"), which a normalised path never has`)
    if (segment === '*') {
      if (i !== segments.length - 1) throw new Error(`"*" must be the last segment of "${template}"`)
      params.push('*')
      source += '(?:/(.*))?'
      return
    }
    const param = PARAM.exec(segment)
    if (param !== null) {
      if (params.includes(param[1]!)) throw new Error(`parameter ":${param[1]}" appears twice in "${template}"`)
      params.push(param[1]!)
      source += '/([^/]+)'
      return
    }
    if (segment.includes(':') || segment.includes('*')) throw new Error(`segment "${segment}" of "${template}" mixes text with ":" or "*"`)
    literalLength += segment.length + 1
    source += '/' + segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  })
  return { regex: new RegExp(source + '$'), params, literalLength }
}
