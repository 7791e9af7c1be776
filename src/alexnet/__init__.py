"""A faithful reproduction of AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012)."""
