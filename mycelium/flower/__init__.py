"""The Flower runtime of groups and members (Flower 1.42 deployment engine).

- ``procs``: child processes (``ManagedProcess``, ports, deadlines) and Flower's executables
  and environment; ``errors``: this package's exception tree;
- ``protocol``: every value that crosses a process boundary, typed with its codec
  (``RunConfig``, ``SuperNodeConfig``, ``FitMeta``, ``FitReplyMeta``), and ``format_config``;
- ``supernode``: a member's ``flower-supernode`` child; ``group_host``: a group's
  ``flower-superlink`` + registry entry + open-ended ``flwr run``, and
  ``host_until_signalled`` (the ``group`` command);
- ``trainer`` (torch side) and ``trainer_http`` (loopback HTTP side): the warm-trainer
  bridge between a member's ClientApp and its node agent; ``client_fit``: the ClientApp's work;
- ``strategy`` (flwr's strategies over live registry members), ``rounds`` (the open-ended
  round loop over the run config) and ``group_registry`` (the ServerApp's registry calls):
  the ServerApp.

Importing this package loads neither torch nor flwr; the ServerApp modules import flwr.
"""
