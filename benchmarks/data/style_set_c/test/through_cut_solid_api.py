from cadquery import Solid, Vector
a = Solid.makeBox(40, 20, 10)
b = Solid.makeCylinder(4, 10, pnt=Vector(20, 10, 0))
shape = a.cut(b)
