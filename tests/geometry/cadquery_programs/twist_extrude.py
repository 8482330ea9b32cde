import cadquery as cq

result = cq.Workplane("XY").rect(10, 10).twistExtrude(20, 45)
