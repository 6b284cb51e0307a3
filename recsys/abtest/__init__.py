"""Offline A/B evaluation (docs/architecture.md): paired statistics, segments, off-policy estimates, reports.

Submodules, each with one job (import what you need; nothing heavy is imported here):

- `recsys.abtest.paired`: per-user paired comparison of two systems: bootstrap CIs, paired t-test,
  sign-flip randomization test, Holm correction, Cohen's d_z, verdict lines (`compare_topk`,
  `compare_arrays`, `holm`, `bootstrap_ci`, ...).
- `recsys.abtest.segments`: breakdowns by user history length and target-item popularity, lift by
  history length, coverage / novelty / popularity bias (`segment_comparisons`, `lift_by_history`, ...).
- `recsys.abtest.ope`: IPS / SNIPS / DR estimates of a target policy's click rate from impressions with
  logging propensities (`estimate_policy_value`, `compare_policies`, their `OPESettings`, `policy_from_topk`).
- `recsys.abtest.report`: `ABResult` and `write_report` (markdown + PNG plots + JSON).

The end-to-end entry (split + two systems -> report) is `jobs.ab_job.run_ab`.
"""
