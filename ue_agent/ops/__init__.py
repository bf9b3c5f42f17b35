"""The socket operations, one module per family (status, aka, sdes, mikey, session).

Each operation is declared once, next to its handler, with :func:`~ue_agent.ops.declare.operation`:
its name, its typed request (a dataclass whose fields are the parameters) and whether it
runs at once or waits for the card or the network. The dispatcher
(:meth:`ue_agent.agent.Agent.handle`), the parameter check (:func:`ue_agent.api.schema.compiled`),
the operation list ``hello`` returns and the docs/api.md test all read that declaration
through :data:`ue_agent.ops.registry.OPERATIONS`.

Handler modules import only light modules at import time: what an operation needs (the
SDES codec, the KMS client, the media store) is imported when it first runs.
"""
