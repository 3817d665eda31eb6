"""Topologies are declared data: what a topology is made of — hosts, switches, links and every
shaped direction with its trace, seed and matches — is known without building anything."""
from __future__ import annotations

import pytest

from topologies.topo import (CROSS_IP, EDGE_IP, TOPOLOGIES, CrossTraffic, DeviceEdge, DeviceTrace, FixedRate, HostDecl,
                             Layout, LinkDecl, Port, SharedTrace, ShapedLink, Star, SwitchDecl, device_ip, node_name,
                             topology_from_spec)


def test_star_declares_its_shaped_links_with_seeds_and_matches():
    lay = Star(n_devices=3, backhaul_rate_bps=40e6, cross_traffic=CrossTraffic(2e6)).declare(seed=5)
    assert [(h.name, h.role, h.ip) for h in lay.hosts] == [
        ("e", "edge", EDGE_IP), ("d0", "device", "10.0.0.1"), ("d1", "device", "10.0.0.2"),
        ("d2", "device", "10.0.0.3"), ("x", "cross", CROSS_IP)]
    assert lay.switches == (SwitchDecl("ap"),)
    assert {(ln.a, ln.b) for ln in lay.links} == {("d0", "ap"), ("d1", "ap"), ("d2", "ap"), ("e", "ap"), ("x", "ap")}
    got = {s.name: (s.egress, s.source, s.seed, s.index, s.match_src, s.match_dst, s.shared) for s in lay.shaped}
    want = {}
    for k in range(3):  # today's seeds: run seed * 1000 + 2k (up), + 2k + 1 (down)
        ip = device_ip(k)
        want[f"d{k}.up"] = (Port(f"d{k}", "ap"), DeviceTrace(k), 5000 + 2 * k, 2 * k, ip, None, False)
        want[f"d{k}.down"] = (Port("e", "ap"), DeviceTrace(k), 5000 + 2 * k + 1, 2 * k + 1, None, ip, False)
    want["backhaul.up"] = (Port("ap", "e"), FixedRate(40e6), 5006, 6, None, None, True)
    assert got == want
    backhaul = next(s for s in lay.shaped if s.name == "backhaul.up")
    assert backhaul.devices == (0, 1, 2) and backhaul.ingress == Port("e", "ap")
    assert lay.shared_egresses() == [Port("e", "ap")]  # the edge reaches every device through one port
    assert {d: s.name for d, s in lay.device_links(2).items()} == {"up": "d2.up", "down": "d2.down"}
    assert lay.cross_traffic == CrossTraffic(2e6)


def test_device_edge_declares_one_direct_link():
    lay = DeviceEdge().declare(seed=0)
    assert lay.links == (LinkDecl("d0", "e"),) and lay.switches == ()
    assert [(s.name, s.seed, s.egress, s.match_src, s.match_dst) for s in lay.shaped] == [
        ("d0.up", 0, Port("d0", "e"), None, None), ("d0.down", 1, Port("e", "d0"), None, None)]
    assert lay.shared_egresses() == []


def test_several_devices_can_share_one_declared_link():
    """The declaration of a cell: two devices whose traffic crosses one uplink and one downlink,
    driven by one shared trace (no per-device links)."""
    hosts = (HostDecl("e", "edge", EDGE_IP), HostDecl("d0", "device", device_ip(0), 0),
             HostDecl("d1", "device", device_ip(1), 1))
    links = (LinkDecl("d0", "ap"), LinkDecl("d1", "ap"), LinkDecl("e", "ap"))
    shaped = (ShapedLink("cell.up", "up", Port("ap", "e"), Port("e", "ap"), SharedTrace("cell"), 0, 0, (0, 1), True),
              ShapedLink("cell.down", "down", Port("ap", "d0"), Port("d0", "ap"), SharedTrace("cell"), 1, 1, (0, 1),
                         True))
    lay = Layout(hosts, (SwitchDecl("ap"),), links, shaped)
    assert lay.device_links(0) == {} and set(lay.shared_traces()["cell"]) == {"up", "down"}


def test_layouts_are_checked():
    hosts = (HostDecl("e", "edge", EDGE_IP), HostDecl("d0", "device", device_ip(0), 0))
    up = ShapedLink("d0.up", "up", Port("d0", "e"), Port("e", "d0"), DeviceTrace(0), 0, 0, (0,))
    with pytest.raises(ValueError, match="no link d0–e"):
        Layout(hosts, (), (), (up,))
    with pytest.raises(ValueError, match="index 0 repeats"):
        Layout(hosts, (), (LinkDecl("d0", "e"),), (up, ShapedLink("d0.down", "down", Port("e", "d0"), Port("d0", "e"),
                                                                  DeviceTrace(0), 1, 0, (0,))))
    with pytest.raises(ValueError, match="no device 3"):
        Layout(hosts, (), (LinkDecl("d0", "e"),), (ShapedLink("d3.up", "up", Port("d0", "e"), Port("e", "d0"),
                                                              DeviceTrace(3), 0, 0, (3,)),))
    with pytest.raises(ValueError, match="exactly one edge"):
        Layout(hosts[1:], (), (), ())
    assert node_name("d12", "ab12") == "dab1212" and node_name("ap", "ab12") == "apab12"


def test_the_registry_names_every_topology_and_builds_from_a_spec():
    assert set(TOPOLOGIES) == {"device-edge", "star"}
    t = topology_from_spec({"kind": "star", "n_devices": 4, "cross_traffic_bps": 1e6, "backhaul_rate_bps": None})
    assert isinstance(t, Star) and t.n_devices == 4 and t.cross_traffic == CrossTraffic(1e6)
    assert len(t.declare(1).shaped) == 8


def test_wisv_link_layout_prints_the_declaration(capsys):
    import json

    from wisv.cli import build_parser

    a = build_parser().parse_args(["link", "layout", "--kind", "star", "--n-devices", "2", "--backhaul-rate-bps", "4e7",
                                   "--seed", "5", "--json"])
    assert a.func(a) == 0
    lay = json.loads(capsys.readouterr().out)
    assert [(s["name"], s["seed"], s["match_dst"]) for s in lay["shaped"]] == [
        ("d0.up", 5000, None), ("d0.down", 5001, "10.0.0.1"), ("d1.up", 5002, None), ("d1.down", 5003, "10.0.0.2"),
        ("backhaul.up", 5004, None)]
