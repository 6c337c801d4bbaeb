"""``loyalty rules validate|apply|list`` and ``loyalty serve --config`` with rules."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid

import grpc
import pytest
import ray

from loyalty.server.cli.main import main
from loyalty.server.runtime.embedded_redis import free_port
from loyalty.v1 import admin_pb2 as apb
from loyalty.v1 import admin_pb2_grpc, loyalty_pb2_grpc
from loyalty.v1 import loyalty_pb2 as pb

RULES = textwrap.dedent("""\
    [program]
    points_per_unit = "1"

    [[rules]]
    rule_id = "double-weekend"
    name = "Double points at weekends"
    priority = 10
    schedule.days_of_week = ["sat", "sun"]
    schedule.time_zone = "Europe/Paris"
    effect.multiplier = "2"

    [[rules]]
    rule_id = "triple-always"
    priority = 5
    effect.multiplier = "3"
    caps.per_member_day = 1000
    budget.total_points = 50000
""")

BROKEN = textwrap.dedent("""\
    [[rules]]
    rule_id = "fine"
    effect.bonus_points = 5

    [[rules]]
    rule_id = "broken"
    effect.multiplier = "two"
    schedule.time_zone = "Mars/Olympus"
""")


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return path


def test_validate_accepts_a_good_file(rules_file, capsys):
    assert main(["rules", "validate", str(rules_file)]) == 0
    assert "2 rules, valid" in capsys.readouterr().out


def test_validate_prints_every_problem_with_its_line(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    assert main(["rules", "validate", str(path)]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert f"{path}: line 7: rules[1].effect.multiplier: not a decimal number: 'two'" in errors
    assert any(line.startswith(f"{path}: line 8: rules[1].schedule.time_zone") for line in errors)
    assert not any("rules[0]" in line for line in errors)


def test_validate_of_a_missing_file_is_a_usage_error(tmp_path, capsys):
    assert main(["rules", "validate", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_apply_then_list_then_apply_again_changes_nothing(loyalty_server, rules_file, capsys):
    target = ["--target", loyalty_server.target]
    assert main(["rules", "apply", str(rules_file), *target]) == 0
    applied = capsys.readouterr().out
    assert "applied 2 rules" in applied
    version = int(applied.split()[2].rstrip(":"))
    assert main(["rules", "list", *target]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == f"rules version {version}: 2 rules"
    assert listing[2].split()[:4] == ["double-weekend", "10", "yes", "multiplier"]
    assert listing[3].split()[:4] == ["triple-always", "5", "yes", "multiplier"]
    assert listing[3].split()[-1] == "50000"  # budget left
    assert main(["rules", "apply", str(rules_file), *target]) == 0
    assert capsys.readouterr().out.startswith(f"rules version {version}: unchanged")
    # A stale --expected-version is refused and changes nothing.
    assert main(["rules", "apply", str(rules_file), *target, "--expected-version", str(version + 7)]) == 1
    assert "ABORTED ETAG_MISMATCH" in capsys.readouterr().err
    with grpc.insecure_channel(loyalty_server.target) as channel:
        live = admin_pb2_grpc.AdminServiceStub(channel).ListRules(apb.ListRulesRequest())
    assert live.version == version
    assert [rule.rule_id for rule in live.rules] == ["double-weekend", "triple-always"]


def test_apply_to_a_server_that_is_not_there_is_a_connection_error(rules_file, capsys):
    assert main(["rules", "list", "--target", f"127.0.0.1:{free_port()}"]) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err


def _serve(config_path, data_dir, port: int, *extra: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "loyalty.server.cli.main", "serve", "--port", str(port), "--shards", "2",
         "--config", str(config_path), "--data-dir", str(data_dir),
         "--ray-address", ray.get_runtime_context().gcs_address, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for line in process.stdout:
        if "loyalty: ready" in line:
            return process
    raise AssertionError(f"loyalty serve exited with {process.wait()}")


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output


def test_serve_config_loads_rules_once_and_they_persist(ray_session, tmp_path, rules_file):
    port, data_dir = free_port(), tmp_path / "data"
    process = _serve(rules_file, data_dir, port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            first = admin_pb2_grpc.AdminServiceStub(channel).ListRules(apb.ListRulesRequest())
        assert [rule.rule_id for rule in first.rules] == ["double-weekend", "triple-always"]
    finally:
        _stop(process)
    # Same file again, now with two gateway processes: the stored set is the file's, so
    # no new version; both processes serve the rules and earn with them.
    process = _serve(rules_file, data_dir, port, "--gateways", "2")
    try:
        member = f"m-{uuid.uuid4().hex[:8]}"
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(6)]
        try:
            loyalty_pb2_grpc.LoyaltyServiceStub(channels[0]).EnrollMember(
                pb.EnrollMemberRequest(member_id=member, request_id="e"))
            for index, channel in enumerate(channels):
                listed = admin_pb2_grpc.AdminServiceStub(channel).ListRules(apb.ListRulesRequest())
                assert (listed.version, [rule.etag for rule in listed.rules]) == (
                    first.version, [rule.etag for rule in first.rules])
                earned = loyalty_pb2_grpc.LoyaltyServiceStub(channel).Earn(pb.EarnRequest(
                    member_id=member, request_id=f"p{index}", purchase=pb.Purchase(currency="EUR", lines=[
                        pb.PurchaseLine(sku="s", quantity=1, amount_minor=1000)])))
                assert earned.rules_version == first.version
                assert earned.points in (30, 40)  # x3 always; x4 on a Paris weekend
        finally:
            for channel in channels:
                channel.close()
    finally:
        _stop(process)
    # A changed file replaces the live set at start: one new version.
    changed = tmp_path / "changed.toml"
    changed.write_text(RULES.replace('effect.multiplier = "3"', 'effect.multiplier = "4"'))
    process = _serve(changed, data_dir, port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            listed = admin_pb2_grpc.AdminServiceStub(channel).ListRules(apb.ListRulesRequest())
        assert listed.version == first.version + 1
        assert listed.rules[1].effect.multiplier == "4"
        assert listed.rules[0] == first.rules[0]  # unchanged rules keep their etag and version
    finally:
        _stop(process)


def test_serve_refuses_a_config_with_bad_rules(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(BROKEN)
    assert main(["serve", "--config", str(path), "--data-dir", str(tmp_path / "data")]) == 2
    assert "line 7: rules[1].effect.multiplier" in capsys.readouterr().err
