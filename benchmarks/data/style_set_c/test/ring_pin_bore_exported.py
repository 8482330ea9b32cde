import cadquery as cq
result = cq.Workplane("XY").cylinder(50, 12).faces(">Z").workplane().hole(8)
cq.exporters.export(result, "pin.step")
cq.exporters.export(result, "pin.stl")
