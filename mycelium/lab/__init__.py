"""The namespace lab: network namespaces standing for hosts, for tests and benches.

``netns`` makes the hosts (one namespace each, veth links on 198.18.0.0/24, no default route)
and runs ``probe.py`` inside them, so that nothing in the calling process opens a socket to a
lab address; ``stack`` starts the real registry (HTTPS) and real node agents in them and reads
the registry from inside a host; ``faults`` breaks the lab's links and processes with the
kernel's own tools (nftables and ``tc`` in ``links``; ``relay``, a delaying TCP relay, where
the kernel has no netem), each fault undone. What the lab tests lives in :mod:`mycelium.net`
(exposure rule, certificates, TLS settings, member trust). Nothing here imports torch, flwr
or fastapi.
"""
