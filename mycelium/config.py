"""The one home of Mycelium Net's defaults (in the spirit of httpx's ``_config.py``).

Every default that more than one place needs (the CLI, the registry's ``Settings``,
``NodeConfig``, the group host, the demo, benchmarks, tests) is defined here once and
imported. Values that only one module uses stay in that module. This module imports
nothing heavy: the CLI reads it before ``--help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

# -- the registry ------------------------------------------------------------------------
REGISTRY_HOST = "127.0.0.1"
REGISTRY_PORT = 8000
REGISTRY_URL = f"http://localhost:{REGISTRY_PORT}"
REGISTRY_DB = Path("mycelium.db")
NODE_TTL_S = 90.0  # seconds without heartbeat before a node counts as dead
GROUP_TTL_S = 120.0  # seconds without a coordinator report before a group has failed
MAX_MODEL_MB = 64.0  # largest model upload, MiB
MiB = 1024 * 1024
MAX_MODEL_BYTES = int(MAX_MODEL_MB * MiB)
MAX_GROUPS_PER_NODE = 3  # live groups one node may have created (operators are not bounded)
REGISTRY_FLUSH_INTERVAL_S = 0.2  # seconds between commits of queued heartbeat rows
# Failure cases (docs/architecture.md): silence that is the registry's own is not counted.
OUTAGE_MIN_S = 2.0  # a sweep this late (beyond its interval) means the registry was away
SELF_PRESERVATION_THRESHOLD = 0.15  # share of live nodes lost within one node TTL (Eureka's)
SELF_PRESERVATION_MAX_S = 300.0  # self-preservation ends after this many seconds at most
SELF_PRESERVATION_MIN_LOST = 2  # fewer lost nodes never start it (one death is no event)
VOUCH_MAX_TTLS = 5  # members keep a group without host reports at most this many group TTLs

# -- talking to the registry ---------------------------------------------------------------
REGISTRY_TIMEOUT_S = 5.0  # every RegistryClient call
# A client given several registry URLs tries each at most this many times per call before it
# raises RegistryUnavailable (one URL: once, as its callers back off themselves); between tries
# it waits a jittered exponential step: half to all of FIRST seconds, doubling, capped at CAP
# (docs/registry.md, "Failover and retried writes").
REGISTRY_FAILOVER_PASSES = 2
REGISTRY_FAILOVER_FIRST_S = 0.2
REGISTRY_FAILOVER_CAP_S = 2.0
HEALTH_TIMEOUT_S = 1.0  # one /health probe while waiting for a registry to start
START_TIMEOUT_S = 30.0  # a registry process must answer /health within this

# -- tasks, data and groups ----------------------------------------------------------------
TASK = "digits"
SCENARIOS = ("rotate", "permute", "mixed")
SCENARIO = "rotate"
CLUSTERS = 3
JOIN_POLICIES = ("open", "invite-only")
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad")  # flwr's classes
# Final: a default is its literal value, so it fits the API models' Literal fields.
STRATEGY: Final = "fedavg"
PROXIMAL_MU = 0.01  # FedProx's mu when none is given (flwr's own 0.0 makes it plain FedAvg)
JOIN_POLICY: Final = "open"
MAX_CAPACITY = 10

# -- a node agent --------------------------------------------------------------------------
NODE_HEARTBEAT_INTERVAL_S = 30.0
GROUP_EVALUATION_INTERVAL_S = 60.0
# Evaluations a node without a group keeps searching beside listed groups that score below
# its local model, one within the policy's search_margin, before it founds (the policy's
# search_s: this many evaluation intervals in the agent, this many rounds in the simulation).
SEARCH_EVALUATIONS = 2
NODE_STATUS_INTERVAL_S = 15.0  # seconds between writes of a node's status.json
PERFORMANCE_THRESHOLD = 0.05  # accuracy gain on own data needed to migrate
COOLDOWN_S = 120.0  # seconds after a move before the next
WARMUP_EPOCHS = 20
PERSONAL = "ens"  # a node's personal model: group + fine-tuned + local ensemble (learning.personal)
NODE_PARTITIONS = 6  # shards of a node's scenario
NODE_PARTITION = f"0/{NODE_PARTITIONS}"
MAX_CANDIDATES = 8  # groups a node probes besides its own

# -- a hosted group ------------------------------------------------------------------------
GROUP_HOST = "127.0.0.1"  # interface a group's SuperLink binds (off loopback: TLS, see net/)
GROUP_HEARTBEAT_INTERVAL_S = 10.0
MIN_ROUND_TIMEOUT_S = 30.0

# -- where processes keep their files (relative defaults are made absolute by the CLI) -----
RUNS_DIR = Path("runs")

# -- logging -------------------------------------------------------------------------------
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_DATEFMT = "%H:%M:%S"
