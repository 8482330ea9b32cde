import cadquery as cq

block = cq.Workplane("front").box(2, 3, 0.5)
result = block.translate((1, 1, 1))
