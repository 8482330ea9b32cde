import cadquery as cq

result = cq.Workplane("XY").cylinder(height=4, radius=50)
