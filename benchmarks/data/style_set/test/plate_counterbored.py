import cadquery as cq

result = (
    cq.Workplane("XY")
    .box(200, 120, 12)
    .faces(">Z")
    .workplane()
    .pushPoints([(-60, 0), (60, 0)])
    .cboreHole(15, 25, 4)
)
