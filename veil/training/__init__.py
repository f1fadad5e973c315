"""Joint modelling (联合建模): the parts of vertical federated training every party shares.

Vertical federated logistic regression between one *label party* (the platform: loan
outcomes, optionally some features of its own) and two or more *feature parties*
(providers: features only).  Nothing here knows about a single node; the roles live in
``platform_node.training`` (label party, coordinator) and ``provider_node.training``
(feature party).  The protocol, message by message, and what each party learns are in
``docs/training.md`` and LEAKAGE.md ("Training").

* :mod:`veil.training.config` — hyper-parameters of a job, the deterministic split;
* :mod:`veil.training.stages` — the protocol's stage order, checked on both sides;
* :mod:`veil.training.table` — reading a party's CSV (IDs, labels, bad input);
* :mod:`veil.training.encoding` — per-party column encoders (standardised numerics,
  one-hot or WOE categoricals, missing values) and their IV bins;
* :mod:`veil.training.binning` — quantile bins, WOE and IV maths;
* :mod:`veil.training.packing` — fixed-point feature packing into Paillier plaintexts;
* :mod:`veil.training.secure_sum` — vector pairwise masks (secure sum of partial scores);
* :mod:`veil.training.psi` — private set intersection on X25519 (commutative blinding);
* :mod:`veil.training.optim` — per-party Adam / SGD with L2 and a learning-rate schedule;
* :mod:`veil.training.metrics` — AUC, KS, ROC and KS curves, log-loss;
* :mod:`veil.training.model` — the trained model as documents (``veil-vfl/1`` and the
  scoring registry's ``veil-model/1``);
* :mod:`veil.training.report` — PNG plots and a Markdown report.
"""
