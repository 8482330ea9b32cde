import cadquery as cq

result = cq.Workplane("XY").rect(35, 12).extrude(-8)
