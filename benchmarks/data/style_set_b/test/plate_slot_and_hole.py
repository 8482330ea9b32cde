import cadquery as cq

result = (
    cq.Workplane("XY")
    .rect(120, 60)
    .extrude(10)
    .faces(">Z")
    .workplane()
    .center(-25, 0)
    .slot2D(40, 12)
    .cutThruAll()
    .faces(">Z")
    .workplane()
    .center(35, 0)
    .hole(16)
)
