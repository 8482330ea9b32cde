import cadquery as cq

result = cq.Workplane("XY").box(100, 100, 10).faces(">Z").workplane().rarray(60, 60, 2, 2).circle(6).extrude(20)
