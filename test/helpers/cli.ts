// Runs the built CLI (dist/src/cli/index.js) as a child process, as a user would.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { dirname, resolve } from 'node:path'

/** dist/test/helpers/cli.js → dist/src/cli/index.js */
export const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli/index.js')

export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the CLI with `args`; FASTMESH_* variables come only from `env`, never from the test runner's. */
export async function spawnCli (args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 20_000): Promise<CliResult> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FASTMESH_')))
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
  const code = await new Promise<number | null>((resolve) => { child.once('close', (c) => { resolve(c) }) })
  clearTimeout(timer)
  return { code, stdout, stderr }
}
