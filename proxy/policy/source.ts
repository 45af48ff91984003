/**
 * Strict reading of the policy engine's YAML files (the policy and `policy test` cases) with
 * positions: every problem names `file:line:col` (1-based, from the yaml library's node ranges)
 * and, where there is one, the rule or case it belongs to. Readers collect every problem of a
 * file and the caller throws one `PolicyError` listing them all, so nothing is half-loaded.
 */
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';

export interface PolicyProblem {
  file: string;
  line: number;
  col: number;
  /** The rule the problem is in (policy files), when there is one. */
  rule?: string;
  /** The case the problem is in (`policy test` cases files), when there is one. */
  case?: string;
  message: string;
}

/** A policy or cases file that cannot be loaded: every problem found, each with its position. */
export class PolicyError extends Error {
  readonly code = 'ERR_PROXY_POLICY_INVALID';
  readonly problems: readonly PolicyProblem[];

  constructor(problems: readonly PolicyProblem[], options?: { cause?: unknown }) {
    super(problems.map(formatProblem).join('\n'), options);
    this.name = 'PolicyError';
    this.problems = problems;
  }
}

export function formatProblem(p: PolicyProblem): string {
  const where = p.rule !== undefined ? `rule ${p.rule}: ` : p.case !== undefined ? `case ${p.case}: ` : '';
  return `${p.file}:${p.line}:${p.col}: ${where}${p.message}`;
}

/** A parsed YAML node with the position of where it starts. */
export type YNode = Node;

/** One entry of a YAML map: the key's node (for positions) and the value's node. */
export interface Entry {
  keyNode: YNode;
  value: YNode | null;
}

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

/** The allowed key closest to `key` (camelCase, case and small typos forgiven), if any. */
export function suggestKey(key: string, allowed: readonly string[]): string | undefined {
  const fold = (s: string): string => s.replace(/[-_]/g, '').toLowerCase();
  const folded = allowed.find((k) => fold(k) === fold(key));
  if (folded !== undefined) return folded;
  let best: string | undefined;
  let bestD = 3;
  for (const k of allowed) {
    const d = levenshtein(key.toLowerCase(), k);
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best;
}

/** A YAML file being read: its document, positions and the problems found so far. */
export class YamlFile {
  readonly problems: PolicyProblem[] = [];
  readonly doc: Document.Parsed;
  private readonly lines = new LineCounter();

  /** `label` says what the `rule` argument of the readers names: a rule, or a test case. */
  constructor(
    readonly text: string,
    readonly file: string,
    private readonly label: 'rule' | 'case' = 'rule',
  ) {
    this.doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, uniqueKeys: true, strict: true });
    for (const e of this.doc.errors) {
      const at = this.lines.linePos(e.pos[0]);
      this.problems.push({ file, line: at.line, col: at.col, message: `YAML: ${e.message.split('\n')[0]}` });
    }
  }

  /** The root node, or undefined (with a problem) when the file is empty or not YAML. */
  root(): YNode | undefined {
    if (this.problems.length > 0) return undefined;
    const c = this.doc.contents;
    if (c === null || (isScalar(c) && (c.value === null || c.value === ''))) {
      this.problems.push({ file: this.file, line: 1, col: 1, message: 'the file is empty' });
      return undefined;
    }
    return c as YNode;
  }

  pos(node: YNode | null | undefined): { line: number; col: number } {
    const offset = node?.range?.[0] ?? 0;
    return this.lines.linePos(offset);
  }

  problem(node: YNode | null | undefined, message: string, rule?: string): void {
    const { line, col } = this.pos(node);
    this.problems.push({ file: this.file, line, col, ...(rule !== undefined ? { [this.label]: rule } : {}), message });
  }

  /** Aliases (`*name`) are read as the node they point to. */
  private resolve(node: YNode | null): YNode | null {
    if (node !== null && isAlias(node)) return (node.resolve(this.doc) as YNode | undefined) ?? null;
    return node;
  }

  /**
   * The entries of a map, by key. Reports a value that is not a map, keys that are not plain
   * strings and keys not in `allowed` (with a suggestion; `'any'` for free-form keys); returns
   * undefined when not a map.
   */
  map(node: YNode | null, what: string, allowed: readonly string[] | 'any', rule?: string): Map<string, Entry> | undefined {
    const n = this.resolve(node);
    if (n === null || !isMap(n)) {
      this.problem(n ?? node, `${what} must be a map`, rule);
      return undefined;
    }
    const out = new Map<string, Entry>();
    for (const pair of n.items) {
      const keyNode = pair.key as YNode;
      if (!isScalar(keyNode) || typeof keyNode.value !== 'string') {
        this.problem(keyNode, `${what}: keys must be plain strings`, rule);
        continue;
      }
      const key = keyNode.value;
      if (allowed !== 'any' && !allowed.includes(key)) {
        const hint = suggestKey(key, allowed);
        this.problem(keyNode, `${what}: unknown key ${JSON.stringify(key)}${hint !== undefined ? ` (did you mean ${hint}?)` : ''}; allowed: ${allowed.join(', ')}`, rule);
        continue;
      }
      out.set(key, { keyNode, value: this.resolve(pair.value as YNode | null) });
    }
    return out;
  }

  /** A scalar string (not a number, boolean or null); undefined with a problem otherwise. */
  string(node: YNode | null, what: string, rule?: string): string | undefined {
    const n = this.resolve(node);
    if (n === null || !isScalar(n) || typeof n.value !== 'string') {
      const got = n === null ? 'nothing' : isScalar(n) ? (n.value === null ? 'null' : typeof n.value) : isSeq(n) ? 'a list' : isMap(n) ? 'a map' : 'something else';
      this.problem(n ?? node, `${what} must be a string, got ${got}${isScalar(n) && n.value !== null ? ' (quote it)' : ''}`, rule);
      return undefined;
    }
    if (n.value === '') {
      this.problem(n, `${what} must not be empty`, rule);
      return undefined;
    }
    return n.value;
  }

  boolean(node: YNode | null, what: string, rule?: string): boolean | undefined {
    const n = this.resolve(node);
    if (n === null || !isScalar(n) || typeof n.value !== 'boolean') {
      this.problem(n ?? node, `${what} must be true or false`, rule);
      return undefined;
    }
    return n.value;
  }

  /** The item nodes of a non-empty list. */
  list(node: YNode | null, what: string, rule?: string): YNode[] | undefined {
    const n = this.resolve(node);
    if (n === null || !isSeq(n)) {
      this.problem(n ?? node, `${what} must be a list`, rule);
      return undefined;
    }
    if (n.items.length === 0) {
      this.problem(n, `${what} must not be an empty list (leave the key out instead)`, rule);
      return undefined;
    }
    return n.items.map((i) => this.resolve(i as YNode | null) ?? (i as YNode));
  }

  /**
   * A non-empty list of distinct strings, each checked by `check` (a problem text, or undefined
   * when the item is fine); undefined when any item has a problem.
   */
  stringList(node: YNode | null, what: string, rule: string | undefined, check: (s: string) => string | undefined = () => undefined): string[] | undefined {
    return this.compiledList(node, what, rule, (s) => check(s) ?? { s })?.map((x) => x.s);
  }

  /** As stringList, each item compiled by `compile` into an object (or a problem text). */
  compiledList<T extends object>(node: YNode | null, what: string, rule: string | undefined, compile: (s: string) => T | string): T[] | undefined {
    const items = this.list(node, what, rule);
    if (items === undefined) return undefined;
    const out: T[] = [];
    const seen = new Set<string>();
    let ok = true;
    for (const item of items) {
      const s = this.string(item, `${what} item`, rule);
      if (s === undefined) {
        ok = false;
        continue;
      }
      if (seen.has(s)) {
        this.problem(item, `${what}: ${JSON.stringify(s)} is listed twice`, rule);
        ok = false;
        continue;
      }
      seen.add(s);
      const r = compile(s);
      if (typeof r === 'string') {
        this.problem(item, `${what}: ${r}`, rule);
        ok = false;
        continue;
      }
      out.push(r);
    }
    return ok ? out : undefined;
  }
}
