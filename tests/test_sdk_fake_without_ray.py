"""The SDK's in-process fake needs neither Ray nor Redis: an application's tests can
use it with only the SDK's own dependencies installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Run in a fresh interpreter, where importing ray or redis (or any module under them)
# fails, so a dependency on either shows up as an ImportError.
FAKE_WITHOUT_RAY_OR_REDIS = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("ray", "redis"):
                raise ImportError(f"{name} may not be imported here")
            return None

    sys.meta_path.insert(0, Refuse())

    from loyalty.clients import ClientConfig, LoyaltyClient
    from loyalty.clients.testing import FakeLoyaltyServer

    with FakeLoyaltyServer() as fake, LoyaltyClient(ClientConfig(target=fake.target)) as client:
        member = client.enroll_member("alice")
    print(member.member_id)
    """
)


def test_the_fake_runs_a_call_without_ray_or_redis():
    run = subprocess.run(
        [sys.executable, "-c", FAKE_WITHOUT_RAY_OR_REDIS], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["alice"]
