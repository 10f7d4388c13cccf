// Weighted sampling in O(1) per draw (Vose's alias method), for the random and
// power-of-two-choices policies: built once per target list, one random number per draw.

export class WeightedSampler {
  private n = 0
  /** Unweighted: a draw is just floor(r * n). */
  uniform = true
  private prob = new Float64Array(0)
  private alias = new Int32Array(0)

  build (weights: readonly number[]): void {
    const n = weights.length
    this.n = n
    this.uniform = weights.every((w) => w === weights[0])
    if (this.uniform || n === 0) return
    let total = 0
    for (const w of weights) total += w
    const prob = new Float64Array(n)
    const alias = new Int32Array(n)
    const scaled = weights.map((w) => (w * n) / total)
    const small: number[] = []
    const large: number[] = []
    scaled.forEach((p, i) => { (p < 1 ? small : large).push(i) })
    while (small.length > 0 && large.length > 0) {
      const s = small.pop()!
      const l = large.pop()!
      prob[s] = scaled[s]!
      alias[s] = l
      scaled[l] = scaled[l]! + scaled[s]! - 1
      ;(scaled[l]! < 1 ? small : large).push(l)
    }
    for (const i of large) { prob[i] = 1; alias[i] = i }
    for (const i of small) { prob[i] = 1; alias[i] = i }
    this.prob = prob
    this.alias = alias
  }

  /** An index drawn in proportion to its weight, from one uniform `r` in [0, 1). */
  draw (r: number): number {
    const x = r * this.n
    const i = Math.floor(x)
    if (this.uniform) return i
    return x - i < this.prob[i]! ? i : this.alias[i]!
  }
}
