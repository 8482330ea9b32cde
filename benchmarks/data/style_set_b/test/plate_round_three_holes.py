import cadquery as cq

result = (
    cq.Workplane("XY")
    .circle(70)
    .extrude(6)
    .faces(">Z")
    .workplane()
    .polarArray(45, 90, 360, 3)
    .hole(14)
)
