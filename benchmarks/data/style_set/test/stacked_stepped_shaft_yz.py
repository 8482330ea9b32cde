import cadquery as cq

result = (
    cq.Workplane("YZ")
    .circle(30)
    .extrude(20)
    .faces(">X")
    .workplane()
    .circle(18)
    .extrude(40)
    .faces(">X")
    .workplane()
    .circle(10)
    .extrude(30)
)
