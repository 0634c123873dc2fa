"""The TNTP reader on a fixture written by the project, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twin.traffic.assign import assign
from twin.traffic.network import NetworkError, read_tntp_net, read_tntp_trips, write_tntp

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "traffic"


def test_reads_the_ring_fixture_and_assigns_it_to_equilibrium() -> None:
    net = read_tntp_net(FIX / "ring_net.tntp")
    od = read_tntp_trips(FIX / "ring_trips.tntp", len(net.zones))
    assert (len(net.zones), net.n_links, od.sum()) == (4, 18, 6000.0)
    assert od[0, 2] == 1200.0 and od[2, 0] == 900.0
    assert net.link_ids[16] == "5-7" and net.capacity[16] == 500.0 and net.alpha[0] == 0.0
    res = assign(net, od, gap=1e-4)
    assert res.converged and res.gap < 1e-4
    # every trip leaves by its zone's connector and arrives by the destination's: zones are no through nodes
    for z in range(4):
        out_link = net.link_ids.index(f"{z + 1}-{z + 5}")
        in_link = net.link_ids.index(f"{z + 5}-{z + 1}")
        assert res.volume[out_link] == pytest.approx(od[z].sum(), rel=1e-9)
        assert res.volume[in_link] == pytest.approx(od[:, z].sum(), rel=1e-9)
    # Wardrop: no route between a pair is cheaper than the one the skim says, and the flows cost what the gap says
    assert res.tstt >= float(np.sum(od * res.skim)) * (1 - 1e-9)
    assert (res.tstt - float(np.sum(od * res.skim))) / res.tstt < 1e-3


def test_writer_and_reader_round_trip(tmp_path: Path) -> None:
    net = read_tntp_net(FIX / "ring_net.tntp")
    od = read_tntp_trips(FIX / "ring_trips.tntp", 4)
    net2 = read_tntp_net(FIX / "ring_net.tntp")
    net2.b = np.where(net2.b >= 8, net2.b - 8, net2.b)  # undo the sink copies: write_tntp writes through zones
    net2.nodes = net2.nodes[:8]
    net2.dest_node = net2.origin_node.copy()
    write_tntp(net2, od, tmp_path / "n.tntp", tmp_path / "t.tntp")
    back = read_tntp_net(tmp_path / "n.tntp")
    assert back.n_links == net.n_links and np.allclose(back.capacity, net.capacity)
    assert np.allclose(read_tntp_trips(tmp_path / "t.tntp", 4), od)


def _net_with(tmp_path: Path, link: str, links: int = 1) -> Path:
    p = tmp_path / "bad_net.tntp"
    p.write_text(f"<NUMBER OF ZONES> 2\n<NUMBER OF NODES> 2\n<FIRST THRU NODE> 1\n<NUMBER OF LINKS> {links}\n"
                 f"<END OF METADATA>\n\n{link}\n", encoding="utf-8")
    return p


@pytest.mark.parametrize(("line", "message"), [
    ("1\t2\tlots\t1\t1\t0.15\t4\t0\t0\t1\t;", r"line 7 \(link 1->2\): could not convert string to float: 'lots'"),
    ("1\t3\t100\t1\t1\t0.15\t4\t0\t0\t1\t;", r"line 7 \(link 1->3\): node 3 is outside 1..2"),
    ("1\t2\t0\t1\t1\t0.15\t4\t0\t0\t1\t;", r"link 1-2 \(1 -> 2\): capacity 0 is not usable"),
    ("1\t2\t100\t1\t-1\t0.15\t4\t0\t0\t1\t;", r"link 1-2 \(1 -> 2\): free-flow time -1 is not usable"),
    ("1\t2\t100\t1\t;", r"line 7: 4 fields, a link needs at least 7"),
])
def test_bad_links_are_named(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(NetworkError, match=message):
        read_tntp_net(_net_with(tmp_path, line))


def test_wrong_link_count_and_missing_metadata(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="says 3, the file has 1 links"):
        read_tntp_net(_net_with(tmp_path, "1\t2\t100\t1\t1\t0.15\t4\t0\t0\t1\t;", links=3))
    p = tmp_path / "x.tntp"
    p.write_text("1 2 3\n", encoding="utf-8")
    with pytest.raises(NetworkError, match="no <END OF METADATA>"):
        read_tntp_net(p)
    with pytest.raises(NetworkError, match="no such network file"):
        read_tntp_net(tmp_path / "missing.tntp")


@pytest.mark.parametrize(("body", "message"), [
    ("Origin 1\n 2 : -4;\n", r"trips 1 -> 2 is '-4'"),
    ("Origin 3\n 1 : 4;\n", r"origin zone 3 is outside 1..2"),
    ("Origin 1\n 7 : 4;\n", r"destination zone 7 \(from origin 1\) is outside 1..2"),
    (" 2 : 4;\n", r"demand before the first 'Origin' line"),
    ("Origin 1\n 2 = 4;\n", r"'2 = 4' is not 'zone : trips'"),
])
def test_bad_trips_are_named(tmp_path: Path, body: str, message: str) -> None:
    p = tmp_path / "t.tntp"
    p.write_text(f"<NUMBER OF ZONES> 2\n<END OF METADATA>\n{body}", encoding="utf-8")
    with pytest.raises(NetworkError, match=message):
        read_tntp_trips(p, 2)


def test_trips_of_another_network_and_a_wrong_total(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="4 zones, but the network has 3"):
        read_tntp_trips(FIX / "ring_trips.tntp", 3)
    p = tmp_path / "t.tntp"
    p.write_text("<NUMBER OF ZONES> 2\n<TOTAL OD FLOW> 10\n<END OF METADATA>\nOrigin 1\n 2 : 4;\n", encoding="utf-8")
    with pytest.raises(NetworkError, match="says 10, the rows add up to 4"):
        read_tntp_trips(p, 2)


def test_a_zone_nobody_can_reach_is_reported_by_name(tmp_path: Path) -> None:
    net_p = tmp_path / "n.tntp"
    net_p.write_text("<NUMBER OF ZONES> 3\n<NUMBER OF NODES> 3\n<FIRST THRU NODE> 1\n<NUMBER OF LINKS> 2\n<END OF METADATA>\n"
                     "1 2 100 1 1 0.15 4 ;\n2 1 100 1 1 0.15 4 ;\n", encoding="utf-8")
    net = read_tntp_net(net_p)
    od = np.array([[0, 5, 7], [5, 0, 0], [0, 0, 0]], dtype=float)
    res = assign(net, od)
    assert res.unreachable == [("1", "3", 7.0)]
    assert res.volume.tolist() == pytest.approx([5.0, 5.0])
