import cadquery as cq

result = cq.Workplane("XY").slot2D(120, 30).extrude(8)
