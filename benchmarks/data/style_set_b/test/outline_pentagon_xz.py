import cadquery as cq

result = cq.Workplane("XZ").polygon(5, 90).extrude(20)
