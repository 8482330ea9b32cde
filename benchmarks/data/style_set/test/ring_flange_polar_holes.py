import cadquery as cq

result = (
    cq.Workplane("XY")
    .circle(60)
    .circle(25)
    .extrude(10)
    .faces(">Z")
    .workplane()
    .polarArray(42, 0, 360, 6)
    .hole(8)
)
