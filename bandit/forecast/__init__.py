"""Forecasts of a live experiment's next decisions, and the replication loop they run.

The tuning advisor (:mod:`bandit.serving.advisor`) asks :mod:`bandit.forecast.forecast` what
a settings change would do; that module runs :func:`bandit.forecast.replicate.replicate`, a
numba loop that plays the service's policy code against a simulated environment. The
researchers' simulator (the ``simulations`` package) runs the same loop, so a forecast and a
simulation of the same problem are the same computation.

- :mod:`bandit.forecast.codes`: integer codes and array layouts the loop reads and writes;
- :mod:`bandit.forecast.feedback`: how rewards reach the simulated store (delays, the
  service's update, forgetting's back-dating, the SW-UCB window);
- :mod:`bandit.forecast.thompson`: Thompson decisions, drawn one at a time;
- :mod:`bandit.forecast.index_policies`: the classic baselines' decisions (UCB and kin);
- :mod:`bandit.forecast.replicate`: the replication loop;
- :mod:`bandit.forecast.parallel`: replications on a thread pool;
- :mod:`bandit.forecast.forecast`: the advisor's forecast and its statistics.
"""
