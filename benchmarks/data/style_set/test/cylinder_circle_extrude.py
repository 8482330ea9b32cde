import cadquery as cq

result = cq.Workplane("XY").circle(25).extrude(60)
