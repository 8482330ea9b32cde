import cadquery as cq

result = cq.Workplane("XY").cylinder(40, 30).faces(">Z").workplane().hole(30)
