"""A program that writes its own result frame (or garbage) into the worker's channel is not believed.

A ``cadquery``-profile program is measured in two stages: it runs in one worker, which sends its
shape back as BREP bytes, and a fresh worker that never ran it measures those. A program that takes
over its worker (here with the static check off; the review that led to this found ways with it on)
can then only choose the shape, never the figures reported for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hostile_common import REACH_OS, assert_contained  # noqa: E402

# Writes a well-formed "ok" frame (with a made-up token) to every fd that might be the result pipe.
FORGE = REACH_OS + (
    "import json, struct\n"
    "h = json.dumps({'kind': 'result', 'token': 'forged', 'status': 'ok', 'reason': '', 'num_faces': 6,"
    " 'volume': 1.0, 'area': 6.0, 'bbox_min': [0, 0, 0], 'bbox_max': [1, 1, 1], 'seconds': 0, 'nv': 0,"
    " 'nf': 0, 'exports': {}}).encode()\n"
    "for fd in range(3, 40):\n"
    "    try:\n"
    "        o['write'](fd, struct.pack('!II', len(h), 0) + h)\n"
    "    except OSError:\n"
    "        pass\n"
)


def test_forged_ok_frame_is_discarded(pool, marker):
    result = pool.run(FORGE.replace("import json, struct", "json = o['sys'].modules['json']\n"
                                   "struct = o['sys'].modules['struct']"), _unchecked=True, profile="cadquery")
    assert result.status.value == "crashed", result.reason
    assert "protocol" in result.reason
    assert_contained(pool, result, marker)


def test_garbage_on_the_channel_is_discarded(pool, marker):
    code = REACH_OS + "for fd in range(3, 40):\n    try:\n        o['write'](fd, b'\\xff' * 64)\n" \
                      "    except OSError:\n        pass\n"
    result = pool.run(code, _unchecked=True, profile="cadquery")
    assert result.status.value == "crashed", result.reason
    assert_contained(pool, result, marker)


def test_step_export_asked_for_is_written_by_the_parent(pool, tmp_path):
    step = tmp_path / "part.step"
    result = pool.run("import cadquery as cq\nr = cq.Workplane().box(1, 2, 3)\n", step_path=step)
    assert result.ok and step.read_bytes().startswith(b"ISO-10303-21;")


# Takes over its worker, answers its own job with a well-formed "ok" claiming a volume of 4242 (the shape it
# hands over is a 1 x 2 x 3 box) and exits cleanly, as an honest worker would.
FORGE_AND_EXIT = REACH_OS + (
    "sys = o['sys']\n"
    "json, io, cq = sys.modules['json'], sys.modules['io'], sys.modules['cadquery']\n"
    "F = sys.modules['cad_recode.geometry.sandbox_frames']\n"
    "found, f = {}, sys._getframe()\n"
    "while f is not None:\n"
    "    found.update({k: v for k, v in f.f_locals.items() if k in ('proto_out', 'request') and k not in found})\n"
    "    f = f.f_back\n"
    "brep = io.BytesIO()\n"
    "bin_tools = sys.modules['importlib'].import_module('OCP.BinTools').BinTools\n"
    "bin_tools.Write_s(cq.Workplane().box(1, 2, 3).val().wrapped, brep)\n"
    "brep = brep.getvalue()\n"
    "head = json.dumps({'kind': 'result', 'token': found['request']['token'], 'status': 'ok', 'reason': '',"
    " 'num_faces': 6, 'volume': 4242.0, 'area': 6.0, 'bbox_min': [0, 0, 0], 'bbox_max': [1, 1, 1], 'seconds': 0,"
    " 'nv': 0, 'nf': 0, 'exports': {'BREP': len(brep)}, 'retire': True}).encode()\n"
    "o['write'](found['proto_out'], F.FRAME_HEAD.pack(len(head), len(brep)) + head + brep)\n"
    "o['_exit'](0)\n"
)

# With the static check on (a second review's find): a finalizer, re-armed at every collection, patches
# cadquery's Shape once the `wrapped` getter (run while the shape is picked, before the tamper check) has
# timed the next collection to land inside the measuring. The solid built is a 300-sided prism, volume 0.785.
PATCH_WHILE_MEASURED = """import cadquery as cq
st = {'phase': 0, 'fired': 0}
keep = []
fake = cq.Workplane().box(10, 10, 10).val()
V0, B0, T0, A0 = cq.Shape.Volume, cq.Shape.BoundingBox, cq.Shape.tessellate, cq.Shape.Area
def fin(self):
    st['fired'] = st['fired'] + 1
    if st['phase'] == 2:
        cq.Shape.Volume = lambda s, tol=None: V0(fake)
        cq.Shape.BoundingBox = lambda s, tolerance=None, optimal=True: B0(fake)
        cq.Shape.tessellate = lambda s, tol, ang=0.1: T0(fake, tol, ang)
        cq.Shape.Area = lambda s: A0(fake)
        st['phase'] = 3
    arm()
X = type('X', (), {'__del__': fin})
def arm():
    o = X()
    o.me = o
arm()
class S(cq.Solid):
    def get(self):
        if st['phase'] == 1:
            n = st['fired']
            tmp = keep
            while st['fired'] == n:
                tmp.append([])
            for i in range(550):
                keep.append([])
            st['phase'] = 2
        return self.h
    def put(self, value):
        self.h = value
    wrapped = property(get, put)
g = cq.Workplane().polygon(300, 1).extrude(1).val()
r = S.makeSolid(g.Shells()[0])
st['phase'] = 1
"""


def test_a_forged_result_gets_only_the_shape_it_hands_over_measured(pool, marker, tmp_path):
    step = tmp_path / "part.step"
    result = pool.run(FORGE_AND_EXIT, _unchecked=True, profile="cadquery", step_path=step)
    assert result.ok, result.reason
    assert result.volume == pytest.approx(6.0) and result.num_faces == 6
    assert result.bbox_max == pytest.approx((0.5, 1.0, 1.5))
    assert result.to_trimesh().volume == pytest.approx(6.0, rel=1e-3)  # the mesh the caller asked for, made there
    assert step.read_bytes().startswith(b"ISO-10303-21;")
    assert not marker.exists()


def test_a_patch_a_finalizer_makes_late_does_not_reach_the_figures(pool):
    result = pool.run(PATCH_WHILE_MEASURED, profile="cadquery")
    assert result.ok, result.reason
    assert result.volume == pytest.approx(0.785, rel=2e-3) and result.num_faces == 302
    assert result.bbox_max[0] - result.bbox_min[0] == pytest.approx(1.0, rel=1e-3)
    assert result.to_trimesh().volume == pytest.approx(0.785, rel=2e-3)


# Full Python (the static check off) re-meshes its cube's faces 100 units away and squashed: a BREP may
# carry each face's triangulation, which bounding box, mesh and STL export would reuse (a third review's find).
FORGED_TRIANGULATION = REACH_OS + (
    "sys = o['sys']\n"
    "cq, Poly, gp = sys.modules['cadquery'], sys.modules['OCP.Poly'], sys.modules['OCP.gp']\n"
    "BRep, TopLoc = sys.modules['OCP.BRep'], sys.modules['OCP.TopLoc']\n"
    "r = cq.Workplane().box(10, 10, 10)\n"
    "s = r.val()\n"
    "s.mesh(0.001, 0.1)\n"
    "b = BRep.BRep_Builder()\n"
    "for f in s.Faces():\n"
    "    t = BRep.BRep_Tool.Triangulation_s(f.wrapped, TopLoc.TopLoc_Location())\n"
    "    n = Poly.Poly_Triangulation(t.NbNodes(), t.NbTriangles(), False)\n"
    "    for i in range(1, t.NbNodes() + 1):\n"
    "        p = t.Node(i)\n"
    "        n.SetNode(i, gp.gp_Pnt(p.X() * 10 + 100, p.Y() / 10, p.Z()))\n"
    "    for i in range(1, t.NbTriangles() + 1):\n"
    "        n.SetTriangle(i, t.Triangle(i))\n"
    "    n.Deflection(0.0)\n"
    "    b.UpdateFace(f.wrapped, n)\n"
)


def test_a_triangulation_in_the_brep_is_not_the_mesh(pool, tmp_path):
    import trimesh

    stl = tmp_path / "part.stl"
    result = pool.run(FORGED_TRIANGULATION, _unchecked=True, profile="cadquery", stl_path=stl)
    assert result.ok, result.reason
    assert result.volume == pytest.approx(1000.0)
    assert [*result.bbox_min, *result.bbox_max] == pytest.approx([-5, -5, -5, 5, 5, 5], abs=1e-3)
    assert [*result.vertices.min(axis=0), *result.vertices.max(axis=0)] == pytest.approx([-5, -5, -5, 5, 5, 5])
    assert trimesh.load(stl).bounds.ravel() == pytest.approx([-5, -5, -5, 5, 5, 5])


# Full Python hands over a 1 x 2 x 3 box that also holds an internal 1000 x 1000 sheet or an internal vertex
# 400 units up (a fourth review's find): BRepCheck accepts either and the volume stays 6, but box, area and
# mesh would count them.
INTERNAL_EXTRA = REACH_OS + (
    "sys = o['sys']\n"
    "cq, BRep, TopoDS = sys.modules['cadquery'], sys.modules['OCP.BRep'], sys.modules['OCP.TopoDS']\n"
    "make, gp, TopAbs = sys.modules['OCP.BRepBuilderAPI'], sys.modules['OCP.gp'], sys.modules['OCP.TopAbs']\n"
    "b = BRep.BRep_Builder()\n"
    "solid = TopoDS.TopoDS_Solid()\n"
    "b.MakeSolid(solid)\n"
    "b.Add(solid, cq.Workplane().box(1, 2, 3).val().Shells()[0].wrapped)\n"
    "if EXTRA == 'sheet':\n"
    "    extra = TopoDS.TopoDS_Shell()\n"
    "    b.MakeShell(extra)\n"
    "    plane = gp.gp_Pln(gp.gp_Pnt(0, 0, 0), gp.gp_Dir(0, 0, 1))\n"
    "    b.Add(extra, make.BRepBuilderAPI_MakeFace(plane, -500, 500, -500, 500).Face())\n"
    "else:\n"
    "    extra = make.BRepBuilderAPI_MakeVertex(gp.gp_Pnt(0, 0, 400)).Vertex()\n"
    "b.Add(solid, extra.Oriented(TopAbs.TopAbs_INTERNAL))\n"
    "r = cq.Solid(solid)\n"
)


@pytest.mark.parametrize(("extra", "found"), [("sheet", "internal face"), ("vertex", "internal vertex")])
def test_a_solid_holding_an_internal_sheet_or_vertex_is_invalid_not_stretched(pool, extra, found):
    result = pool.run(f"EXTRA = {extra!r}\n" + INTERNAL_EXTRA, _unchecked=True, profile="cadquery")
    assert result.status.value == "invalid", (result.status, result.reason, result.bbox_max)
    assert found in result.reason
    assert pool.run("import cadquery as cq\nr = cq.Workplane().box(1, 2, 3)\n", profile="cadquery").ok


# A sixth review's variant: a second shell holding one face with no edges at all, a 500 x 500 plane through the
# box's centre (so it adds nothing to the volume), all FORWARD: box and area came back 500 wide.
WIRELESS_SHEET = REACH_OS + (
    "sys = o['sys']\n"
    "cq, BRep, TopoDS = sys.modules['cadquery'], sys.modules['OCP.BRep'], sys.modules['OCP.TopoDS']\n"
    "Geom, gp = sys.modules['OCP.Geom'], sys.modules['OCP.gp']\n"
    "b = BRep.BRep_Builder()\n"
    "face = TopoDS.TopoDS_Face()\n"
    "plane = Geom.Geom_Plane(gp.gp_Pnt(0, 0, 0), gp.gp_Dir(1, 0, 0))\n"
    "b.MakeFace(face, Geom.Geom_RectangularTrimmedSurface(plane, -250.0, 250.0, -250.0, 250.0), 1e-7)\n"

    "sheet = TopoDS.TopoDS_Shell()\n"
    "b.MakeShell(sheet)\n"
    "b.Add(sheet, face)\n"
    "solid = TopoDS.TopoDS_Solid()\n"
    "b.MakeSolid(solid)\n"
    "b.Add(solid, cq.Workplane().box(1, 2, 3).val().Shells()[0].wrapped)\n"
    "b.Add(solid, sheet)\n"
    "r = cq.Solid(solid)\n"
)


def test_a_second_shell_of_one_face_without_edges_is_invalid_not_stretched(pool):
    result = pool.run(WIRELESS_SHEET, _unchecked=True, profile="cadquery")
    assert result.status.value == "invalid", (result.status, result.reason, result.bbox_min, result.bbox_max)
    assert "a face with no boundary" in result.reason


def test_a_solid_with_a_void_is_still_valid(pool):
    """Shells beyond the first are how a solid holds a cavity: closed, they stay valid."""
    result = pool.run("import cadquery as cq\nr = cq.Workplane().box(10, 10, 10).cut(cq.Workplane().box(2, 2, 2))\n")
    assert result.ok and result.volume == pytest.approx(992.0)
