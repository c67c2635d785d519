"""Development tooling, never installed on a host or in the image: NATS and PostgreSQL from
PyPI wheels (:mod:`.embedded`), the pytest plugin and its servers (:mod:`.plugin`,
:mod:`.cluster`, :mod:`.otlp`) and the whole system on one machine (:mod:`.launcher`, the
``sriov-stack`` command in :mod:`.stack`, its guided tour in :mod:`.demo`).

Each service's own fakes and harness (``sriov.<service>.testing``) stay in its wheel, beside
the code they stand in for: they use only what the service itself depends on, and no
runtime module imports them (tests/deploy/test_install_sets.py checks both).
"""
