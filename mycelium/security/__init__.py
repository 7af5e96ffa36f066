"""Admission and app pinning: only admitted members train, only the host runs its group, and
no member runs code it did not install.

``node_keys`` makes and reads node key pairs in Flower's SuperNode-auth format;
``admission`` keeps a group SuperLink's registered keys equal to the registry's members
(Flower's Control API, as ``flwr supernode register/unregister`` does); ``fleet_proxy``
renders and runs the nginx front that exposes only the Fleet API; ``app_pin`` lets a node
agent serve its SuperNode's ClientApp tasks itself (``--isolation process``) and refuse a
run whose app bundle differs from its own. See docs/security.md.
"""
