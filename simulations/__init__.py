"""The researchers' simulator: ``bandit simulate``, built on the service's own policy code.

The replication loop and its decision kernels are the product's (:mod:`bandit.forecast`,
which the tuning advisor runs too); this package is the front end around them, and the
service never imports it.

- :mod:`simulations.cli`: the ``bandit simulate`` command line;
- :mod:`simulations.policies`, :mod:`simulations.environments`,
  :mod:`simulations.scenarios`: what to simulate (policy specs, environments, the
  literature's problems);
- :mod:`simulations.engine`: replications in parallel threads, results and traces;
  :mod:`simulations.plain`: its fast loop for plain Thompson sampling;
- :mod:`simulations.distributed`: the same runs on a Dask cluster;
- :mod:`simulations.report`: summary, CSV files and plots;
- contextual bandits: :mod:`simulations.contextual_worlds` (environments with contexts, one of
  them obp's synthetic logistic problem), :mod:`simulations.contextual` (the service's
  contextual Thompson sampling and baselines, delayed and batched feedback),
  :mod:`simulations.obd_contextual` (a contextual policy learnt and evaluated on the Open
  Bandit Dataset sample);
- off-policy evaluation on logged data: :mod:`simulations.logs` (logs and loading),
  :mod:`simulations.targets` (the policies evaluated), :mod:`simulations.replay` (the
  estimators), :mod:`simulations.obd` (the Open Bandit Dataset sample and worked example);
  :mod:`simulations.data` names the shipped data.
"""
