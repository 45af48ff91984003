/**
 * spindle-proxy's access policy engine (docs/proxy-policy.md): the policy format and its
 * decider, policy tests, lint, and the `policy` command.
 */
export { DEFAULT_DENY, loadPolicyFile, parsePolicy, Policy, type ListenerDecl, type PolicyMode, type RuleAction, type RuleSpec } from './policy.js';
export { runPolicyTests, type CaseResult, type PolicyTestReport } from './policytest.js';
export { lintPolicy, type LintCheck, type LintFinding, type LintSeverity } from './lint.js';
export { PolicyError, type PolicyProblem } from './source.js';
export { policyCommand, type PolicyCliIo } from './cli.js';
