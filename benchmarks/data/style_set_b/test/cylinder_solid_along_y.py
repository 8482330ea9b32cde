import cadquery as cq

result = cq.Workplane("XY").add(cq.Solid.makeCylinder(20, 60, cq.Vector(0, 0, 0), cq.Vector(0, 1, 0)))
