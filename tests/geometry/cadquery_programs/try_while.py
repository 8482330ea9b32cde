import cadquery as cq

size = 1
while size < 16:
    size *= 2
try:
    result = cq.Workplane("XY").box(size, size, 2).faces(">Z").edges().fillet(100)
except Exception:
    result = cq.Workplane("XY").box(size, size, 2).faces(">Z").edges().fillet(0.5)
