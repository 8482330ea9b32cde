import cadquery as cq

result = cq.Workplane("XZ").circle(40).circle(38).extrude(100)
