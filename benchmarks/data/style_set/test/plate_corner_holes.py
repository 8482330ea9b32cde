import cadquery as cq

result = (
    cq.Workplane("XY")
    .rect(140, 90)
    .extrude(10)
    .faces(">Z")
    .workplane()
    .rect(110, 60, forConstruction=True)
    .vertices()
    .hole(12)
)
