"""Development tooling, never installed on a host or in the image: NATS and PostgreSQL from
PyPI wheels (:mod:`.embedded`), the pytest plugin and its servers (:mod:`.plugin`,
:mod:`.cluster`, :mod:`.otlp`) and the whole system on one machine (:mod:`.launcher`, the
``sriov-stack`` command in :mod:`.stack`, its guided tour in :mod:`.demo`)."""
