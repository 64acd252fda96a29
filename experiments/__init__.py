"""Command-line experiments (absl entry points): `python -m experiments.<name> --help`.

* `experiments.rollout`: a short table of meta-episode returns of a reference policy.
* `experiments.reference_returns`: random / oracle / Bayes returns per env -> results/reference_returns.{json,md}.
* `experiments.bench_envs`: env steps per second vs vmap width -> results/bench_envs.json.
"""


def check_choices(kind: str, values, allowed) -> None:
    """Raises ValueError naming the allowed values when one of `values` is not in `allowed`."""
    for value in values:
        if value not in allowed:
            raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")
