import cadquery as cq

result = cq.Workplane("XY").cylinder(height=10, radius=90)
