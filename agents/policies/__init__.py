"""Pure search policies: functions of the history, settings and an explicit random generator.

* :mod:`~archsmith.agents.policies.bandit`: Thompson sampling over mutation operators.
* :mod:`~archsmith.agents.policies.surrogate`: the score model, cost-aware warm start and the
  acquisition rule of the Navigator's ``model`` strategy.
"""
