"""A test CRD (Widget, group smoke.saigon.ai) and a tiny kopf operator for it, used by
tests/test_controlplane_smoke.py to prove that the control plane serves what operators need."""

from pathlib import Path

CRD_MANIFEST = Path(__file__).with_name("widgets-crd.yaml")
OPERATOR_SCRIPT = Path(__file__).with_name("widget_operator.py")
GROUP = "smoke.saigon.ai"
VERSION = "v1"
PLURAL = "widgets"
CRD_NAME = f"{PLURAL}.{GROUP}"
HANDLED_BY_ANNOTATION = f"{GROUP}/handled-by"
