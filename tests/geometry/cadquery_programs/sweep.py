import cadquery as cq

path = cq.Workplane("XZ").spline([(0, 0), (3, 10), (10, 20)], tangents=[(0, 1), (1, 1)])
result = cq.Workplane("XY").circle(2).sweep(path, isFrenet=True)
