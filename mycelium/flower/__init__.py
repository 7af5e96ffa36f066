"""The Flower runtime of groups and members (Flower 1.42 deployment engine).

- ``procs``: child processes (``ManagedProcess``, ports, deadlines) and Flower's executables
  and environment; ``errors``: this package's exception tree;
- ``protocol``: every key that crosses a process boundary, and ``format_config``;
- ``supernode``: a member's ``flower-supernode`` child; ``group_host``: a group's
  ``flower-superlink`` + registry entry + open-ended ``flwr run``;
- ``trainer`` (torch side) and ``trainer_http`` (loopback HTTP side): the warm-trainer
  bridge between a member's ClientApp and its node agent; ``client_fit``: the ClientApp's work;
- ``strategy`` (FedAvg over live registry members), ``rounds`` (the open-ended round loop,
  the run config) and ``group_registry`` (the ServerApp's registry calls): the ServerApp.

Importing this package loads neither torch nor flwr; the ServerApp modules import flwr.
"""
