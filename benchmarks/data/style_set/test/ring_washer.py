import cadquery as cq

result = cq.Workplane("XY").circle(50).circle(20).extrude(5)
