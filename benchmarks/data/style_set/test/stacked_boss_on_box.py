import cadquery as cq

result = cq.Workplane("XY").box(80, 80, 10).faces(">Z").workplane().circle(15).extrude(30)
