import cadquery as cq

result = cq.Workplane("XZ").polygon(6, 80).extrude(15)
