"""A minimal kopf operator for Widgets: on creation it copies spec.size into
status.observedSize and marks the object as handled.

Loaded by ``kopf run`` as a script (inside pytest, where `controlplane` is importable);
it logs in with the kubeconfig named by $KUBECONFIG.
"""

from typing import Any

import kopf

from controlplane.smoke import GROUP, HANDLED_BY_ANNOTATION, PLURAL, VERSION


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own kubeconfig reader looks at $KUBECONFIG when called; the kubernetes
    # client's reader (login_via_client) froze it when `kubernetes` was first imported.
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations: the Widget status schema has no room for it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)


@kopf.on.create(GROUP, VERSION, PLURAL)
def observe_size(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    patch.status["observedSize"] = spec["size"]
    patch.metadata.annotations[HANDLED_BY_ANNOTATION] = "kopf"
