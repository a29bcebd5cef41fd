"""What the operator, the agent and the runtime agree on; imports none of them.

Resource names and labels, the SaigonAdapter/SaigonModel specs, per-pod reports, typed
status models, the on-disk adapter layout and the asyncio Kubernetes client.
"""
