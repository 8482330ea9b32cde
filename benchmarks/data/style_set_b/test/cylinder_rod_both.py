import cadquery as cq

result = cq.Workplane("XZ").circle(5).extrude(120, both=True)
