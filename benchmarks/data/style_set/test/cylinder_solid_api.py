import cadquery as cq

shaft = cq.Solid.makeCylinder(30, 45, cq.Vector(0, 0, 0), cq.Vector(1, 0, 0))
result = cq.Workplane("XY").add(shaft)
