import cadquery as cq

sketch = cq.Sketch().trapezoid(40, 20, 80).vertices().fillet(2).reset().circle(4, mode="s")
result = cq.Workplane("XY").placeSketch(sketch).extrude(6)
