import cadquery as cq

result = cq.Workplane("XZ").rect(100, 100).circle(20).extrude(6)
